"""Learning from use: what the movie page showed and what its visitors followed, the A/B
experiment between two model versions that decides which rows they see, and the counts that
compare the two arms. ``schemas`` is the contract the web server, the recommender and the
aggregator share."""
