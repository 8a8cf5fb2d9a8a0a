include $(sort $(wildcard $(BR2_EXTERNAL_PORTHOLE_PATH)/package/*/*.mk))
