"""Reservations: the domain package shared by every Lambda function (shipped in the layer)."""

__version__ = "0.1.0"
