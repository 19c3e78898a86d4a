//! Rule files, the group evaluation loop, alert states, templates (the rules issue).
