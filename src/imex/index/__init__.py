"""The index: patients, studies, series and instances as stored by the hub."""
