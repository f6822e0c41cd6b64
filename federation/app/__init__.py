"""The one assembly of an agent (``assembly``) and the production process (``process``)."""
