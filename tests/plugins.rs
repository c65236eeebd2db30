//! The plugin test tier: real components built from `plugins/` in this run (sample and
//! hostile), the real host, and a real OpenBao server for the vault plugin.

mod plugins {
    mod authoring;
    mod capabilities;
    pub mod common;
    mod cosign_made;
    mod golden;
    mod hostile;
    mod operator_caps;
    mod pins_and_reload;
    mod reliability;
    mod scoping;
    mod second_language;
    mod signatures;
    mod vault;
    mod vault_release;
}
