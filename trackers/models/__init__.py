"""Network definitions (plain ``nn.Module`` classes built from a config dataclass).

Submodules are imported on demand (``trackers.models.cotracker3``, ``trackers.models.lorat``) so that importing the
package stays cheap.
"""
