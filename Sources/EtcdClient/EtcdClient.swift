// EtcdClient: under construction in this session.
