// Package config is Strata's configuration file: plain data and validation,
// with no dependency on the packages it configures.
//
// A file is YAML with one section per tier (today lb:; app: and others are
// added as fields of File). Parse decodes it strictly: an unknown field is an
// error, and every error, whether of syntax, of type or of value, names the
// line it is about, so that an operator can fix a file from the message
// alone:
//
//	config: invalid: line 7: lb.backends[1].address: "10.0.0.2" is not host:port
//
// Zero values mean the defaults documented on each field; the tier that
// reads a section applies them (the lb package for LB), so this package only
// rejects what can never be right. Parse is fuzzed: no input makes it panic
// or accept a file that Validate would reject.
package config
