//! The container images an add-on manifest references (see the module docs).
