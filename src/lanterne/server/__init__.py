"""`lanterne serve`: the classroom explorer (a web page of every slide) and an OpenAI-compatible HTTP API, in one process.

The server holds no logic of its own: every answer comes from `lanterne.inspect` and the
generation engine. `app.create_app` builds the FastAPI application; `limits` bounds every request.
"""
