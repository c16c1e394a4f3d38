"""Review: a person settles the review queue in a browser; decisions go to the catalog.

`thresher.review(workspace, port=...)` (thresher/api.py) runs `thresher.review.server.serve`.
"""
