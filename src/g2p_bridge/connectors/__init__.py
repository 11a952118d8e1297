"""Plug-ins that talk to the outside: sponsor bank connectors and ID-mapper resolvers, each found
by name through Python entry points so an integrator can ship one as its own package."""
