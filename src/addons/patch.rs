//! Edits to add-on manifests before `install` applies them (see the module docs).
