"""Adapters to the outside world: Postgres (engine and tables), the Redis slot cache,
e-mail, password hashing and tokens."""
