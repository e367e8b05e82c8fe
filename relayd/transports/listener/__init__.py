"""The listener side of the Hybrid Connections protocol: a listener's control channel and its
rendezvous legs, and the offers the front doors hand the switchboard for it."""
