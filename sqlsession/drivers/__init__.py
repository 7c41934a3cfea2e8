"""The built-in drivers: `sql` (the point of the project) and `memory` (tests, development)."""
