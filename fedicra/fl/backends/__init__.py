"""Backends move the same protocol messages between the server loop and the clients."""
