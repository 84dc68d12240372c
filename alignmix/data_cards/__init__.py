"""The data card: statistics, plots, lineage and the recipe, as markdown, JSON and HTML."""
