"""Stand-in servers for systems that cannot run here, each a module run as its own process by the lab."""
