"""The mesh: Ray actors and apps, each a thin shell around fieldkit logic."""
