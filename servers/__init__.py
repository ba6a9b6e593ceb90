"""How each server is launched: one registry (`servers.registry`) and the config files it names."""
