"""The dataset card of a built mix: statistics, plots, lineage and recipe, as Hub markdown, HTML and terminal."""

from alignmix.data_cards.card import show_card, write_card

__all__ = ["show_card", "write_card"]
