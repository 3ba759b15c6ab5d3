"""Storage accounting: what each institution and each folder holds on the hub, and the quotas that
refuse new data before the disk fills."""
