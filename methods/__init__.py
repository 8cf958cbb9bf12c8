"""The built-in federated methods, one module per method (installed as the package `fedicra_methods`).

`fedicra.fl.registry` imports every module here; nothing imports these modules directly."""
