/etc/config/porthole
/etc/porthole/
