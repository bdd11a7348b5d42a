#!/bin/sh
# ISC dhclient's script in the test VM (DHCPv6 only): applies the address
# and records the lease in /tmp/lease6 as shell assignments.
case "$reason" in
BOUND6 | RENEW6 | REBIND6 | REBOOT6)
	[ -z "$new_ip6_address" ] ||
		ip -6 addr replace "$new_ip6_address/${new_ip6_prefixlen:-128}" dev "$interface" nodad
	{
		echo "new_ip6_address='$new_ip6_address'"
		echo "new_ip6_prefixlen='$new_ip6_prefixlen'"
		echo "new_dhcp6_name_servers='$new_dhcp6_name_servers'"
		echo "new_dhcp6_domain_search='$new_dhcp6_domain_search'"
	} >/tmp/lease6.tmp
	mv /tmp/lease6.tmp /tmp/lease6
	;;
esac
exit 0
