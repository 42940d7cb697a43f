"""Links: ways to get a control and a data byte stream to the peer."""
