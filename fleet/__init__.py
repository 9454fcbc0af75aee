"""The fleet: the inventory of every VM of every service (ManagedInstance), its lifecycle and its history."""
