"""Launch and configuration contracts shared by the operator and the services."""
