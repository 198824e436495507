"""Loss families; each module registers its losses with genloss.registry."""
