"""The HTTP transport: routes, codecs between wire formats and core types, and error mapping."""
