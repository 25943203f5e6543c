"""A user's data as a whole: export (GDPR art. 20) and erase (art. 17). docs/user-data.md."""
