"""HTTP server speaking bedrock-agent, bedrock-agent-runtime and bedrock-runtime (rest-json + SigV4)."""
