from trajstream.simulator.recorded.split import is_held_out, recording_of


def test_recording_is_location_and_first_number():
    assert recording_of("USA_US101-10_1_T-1/484") == "US101-10"
    assert recording_of("USA_Peach-4_2_T-1/7") == "Peach-4"
    assert recording_of("car-17") is None


def test_us101_multiples_of_three_and_peachtree_1_to_3_are_held_out():
    assert is_held_out("USA_US101-3_1_T-1/1")
    assert is_held_out("USA_US101-27_4_T-1/9")
    assert not is_held_out("USA_US101-10_1_T-1/484")
    assert not is_held_out("USA_US101-1_1_T-1/2")
    assert is_held_out("USA_Peach-1_1_T-1/5")
    assert is_held_out("USA_Peach-3_2_T-1/5")
    assert not is_held_out("USA_Peach-4_2_T-1/7")


def test_a_location_the_rule_does_not_know_is_held_out_whole():
    assert is_held_out("USA_I80-1_1_T-1/3")
    assert is_held_out("DEU_Lankershim-4_1_T-1/3")


def test_ids_that_name_no_recording_are_not_held_out():
    assert not is_held_out("car-17")
    assert not is_held_out("sumo-veh12")
