//! The production runtime (API server, store, agents, EC2 pools). Not built yet: see ARCHITECTURE.md.
