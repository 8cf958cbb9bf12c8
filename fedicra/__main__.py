import sys

from fedicra.cli import main

sys.exit(main())
