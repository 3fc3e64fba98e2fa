"""Runtime pieces both programs share: the error root and the AWS client factory."""
