"""A local lab of throwaway PostgreSQL clusters for trying and testing the runbooks."""
