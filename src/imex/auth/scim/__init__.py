"""SCIM 2.0 provisioning (RFC 7643/7644): a hospital's directory creates, changes, disables and removes its
institution's users, and puts them in role groups. `directories` reads the `[[scim]]` tables and knows each
directory by its token; `resources` turns rows into SCIM resources and requests into checked models (with
scim2-models); `users` and `groups` are the actions, each audited with the directory as the actor. HTTP is
in imex.web.scim only."""
