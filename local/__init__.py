"""The local stack: Graph emulator, managed-identity endpoint, dev host. Never deployed."""
