"""Byte and text formats shared by the relay and its clients: pure, no Twisted, no Autobahn."""
