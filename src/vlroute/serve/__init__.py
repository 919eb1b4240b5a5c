"""The OpenAI-compatible routing gateway (``pip install 'vlroute[serve]'``)."""
