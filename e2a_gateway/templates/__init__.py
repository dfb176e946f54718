"""Email templates: a flat Mustache subset (engine) and the starter catalog."""
