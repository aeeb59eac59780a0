"""uwm-upgrade-operator: upgrades a User Workspace Manager estate as the vendor guide demands."""
