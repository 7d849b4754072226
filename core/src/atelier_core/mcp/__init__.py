"""The MCP wing: the only importer of the MCP SDK. It translates between MCP and the pipeline.

``app`` builds the server, ``tools`` holds the tool bodies, ``render`` turns outcomes into
tool results, ``tasks`` serves background jobs as MCP tasks, ``resources`` serves saved
images, ``http`` the streamable-HTTP transport, ``schema`` keeps published schemas small.
"""
