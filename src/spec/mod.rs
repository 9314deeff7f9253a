//! Plan → the cell's Spec: which layers the kernel offers and what each adds.

pub mod layers;
