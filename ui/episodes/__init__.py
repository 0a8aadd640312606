"""Episodes tab: dataset table, player (synchronized cameras + joint plots), segment timeline editor."""
