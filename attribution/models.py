# Deal snapshots, attribution records and disputes arrive with the attribution issue.
