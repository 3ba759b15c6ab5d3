"""The portal's pages: server-rendered (Jinja2, autoescaped), one module per resource named like its JSON
API module in web/api/ (transfers, folders, requests, ...). A page renders what the shared reads in
web/views/ return, the same functions its API handler calls, so a page never shows what the API would
not; page actions are API calls made by static/*.js with the session's CSRF token. Only signing in and
out are classic forms. Rendering helpers are in render.py."""
