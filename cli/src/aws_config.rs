//! Writing a profile into the AWS CLI's shared config file without disturbing anything else.
