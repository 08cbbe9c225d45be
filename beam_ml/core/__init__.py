"""The state contract, its serialization and the one Beam adapter."""
