"""SOAP 1.1/1.2 envelopes (hardened parsing), faults and WSDL address rewriting: pure, on lxml."""
