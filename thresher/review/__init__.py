"""Review: a person settles the review queue in a browser; decisions go to the catalog.

Calling the package serves the page: `thresher.review(workspace, port=...)` is
`thresher.review.server.serve`.
"""

from thresher._callable import make_callable

make_callable(__name__, "thresher.review.server:serve")
