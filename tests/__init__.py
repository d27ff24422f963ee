"""The bundle's test suite (a package, so that its helper modules have one import path: ``tests.<module>``)."""
