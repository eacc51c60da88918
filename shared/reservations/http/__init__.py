"""The HTTP edge shared by every function: app factory, dependencies, error mapping,
and the Lambda entry point. Domain modules never import from here."""
