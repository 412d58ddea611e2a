"""The host processes pyro keeps track of, told apart from strangers that reuse their PIDs."""
