"""The test suite: folders by the layer of the code under test, shared helpers in `support`."""
